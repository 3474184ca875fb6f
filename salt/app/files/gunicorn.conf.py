# gunicorn settings of the workbench app (salt/app). monit starts gunicorn as
# the webapps user with this file; nginx proxies port 80 to the bind address.
bind = "127.0.0.1:8000"
workers = 2
# The app is imported once, before the pid file and the socket exist: monit's HTTP
# check then never meets a listening master whose workers are still importing it
# (minutes on an emulated server), and the workers fork ready.
preload_app = True
chdir = "/srv/apps/app"
# monit supervises it through the pid file, so it must detach.
daemon = True
pidfile = "/run/gunicorn/workbench-app.pid"
accesslog = "/var/log/gunicorn/workbench-app-access.log"
errorlog = "/var/log/gunicorn/workbench-app.log"
proc_name = "workbench-app"
