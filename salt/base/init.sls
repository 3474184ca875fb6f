# The basesystem: applied to every role image before the role's own states.
include:
  - base.packages
  - base.webapps
  - base.updates
  - base.sysctl
  - base.monit
  - base.entrypoint
