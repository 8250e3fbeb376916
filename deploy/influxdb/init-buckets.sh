#!/bin/sh
# Runs once, when the influxdb container sets up an empty volume: the buckets of the scan classes with
# the heat-pump seed's retention (HighSpeed 1 day, MediumSpeed 7 days; LowSpeed 28 days is the initial
# bucket). Names must match deploy/gateway/influx.yaml.
set -e
influx bucket create --name site_high --retention 1d --org "$DOCKER_INFLUXDB_INIT_ORG"
influx bucket create --name site_medium --retention 7d --org "$DOCKER_INFLUXDB_INIT_ORG"
