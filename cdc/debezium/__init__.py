"""cdc.format = debezium: row changes as Debezium's MySQL connector (JsonConverter) writes them."""
