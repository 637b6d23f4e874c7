"""Offline jobs over whole data sets (docs/JOBS.md): the service's model code, without a
server, on this machine or on a Ray cluster."""
