# For the timezone formula (formulas/timezone-formula), used by the db role:
# servers keep UTC, whatever the formula's default.
timezone:
  name: Etc/UTC
  utc: true
