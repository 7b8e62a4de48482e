"""SQAL lot registry on PostgreSQL: migrations, lots, events, timelines, stats.

The only package that writes SQL. It knows nothing about HTTP or MQTT.
"""
