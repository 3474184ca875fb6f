# -*- coding: utf-8 -*-
# vim: ft=sls
# This state configures the timezone.

{%- from "timezone/map.jinja" import timezone with context %}
{%- set name = salt['pillar.get']('timezone:name', timezone.name) %}
{%- set utc = salt['pillar.get']('timezone:utc', timezone.utc) %}

timezone_packages:
  pkg.installed:
    - name: {{ timezone.pkg.name }}

timezone_setting:
  timezone.system:
    - name: {{ name }}
    - utc: {{ utc }}
    - require:
      - pkg: timezone_packages

timezone_symlink:
  file.symlink:
    - name: {{ timezone.path_localtime }}
    - target: {{ timezone.path_zoneinfo }}{{ name }}
    - force: True
    - require:
      - pkg: timezone_packages
      - timezone: timezone_setting
