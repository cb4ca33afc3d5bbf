"""How row-change keys map to partitions: as Java clients do (murmur2), in both formats.

librdkafka's default partitioner hashes keys with CRC32, so `{"id":1}` lands in another of 4
partitions than a Java producer (Kafka Connect, Debezium, Kafka Streams) would put it in, and
co-partitioned joins with Java-produced topics break. murmur2_random is Java's murmur2 for keyed
messages (random for keyless ones, as Java's sticky partitioner is arbitrary too). The snapshot and
the binlog reader must agree, or a key's snapshot row and its later changes land in different
partitions and lose their order.
"""

from __future__ import annotations

ROW_CHANGE_PARTITIONER = {"partitioner": "murmur2_random"}
