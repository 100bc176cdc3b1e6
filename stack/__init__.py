"""The local stack: the project-local Flink home and the services Vigil runs on one machine.

Everything here is real software started from jars and packages the project resolves itself:
a single-node KRaft Apache Kafka broker, s3proxy as the S3 API server, Mosquitto for MQTT and
Flink's own runtime. All state lives under one ignored folder (``VigilSettings.home``, vigil/settings.py).
"""
