"""How bytes get in and out of Vigil: schemas, Avro serde, Kafka and object-store connectors."""
