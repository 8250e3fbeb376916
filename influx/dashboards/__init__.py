"""Grafana dashboards and provisioning generated from a site and the series writer's configuration
(`gateway dashboards site.xml -o DIR [--influx CONFIG]`)."""
