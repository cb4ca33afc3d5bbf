"""The es_indexer example: Elasticsearch-style indexing (by document id, versioned) into Redis.

A document is the Redis hash `<key_prefix>:<index>:<doc_id>` with `_source` (the document's JSON,
stored byte for byte), `_version` (1, 2, ... per write) and `_invocation_id` (the last writer).
Kafka delivers at least once and a runner may run an invocation twice (redelivered while in flight,
a retry after a timeout whose call did finish), so each write is applied once per invocation id:
the marker `<key_prefix>:_applied:<invocation_id>` is set in the same Lua call as the write, and
another run of that invocation changes nothing and answers `noop` with the current version.

A rule that gives it no params (seed 000: `triggers: [data_processor, es_indexer]`) binds `row`,
`operation` and `table` by name: the row is the document, its `id_column` its id, the table the
index, and a DELETE deletes it. This stands in for Elasticsearch (nothing here talks to one): the
same calls against a real cluster would be `index`/`delete` with `version_type=external`.
"""

import json

import redis

APPLIED_TTL_SECONDS = 7 * 24 * 3600

# KEYS: document key, applied marker. ARGV: op, source JSON, invocation id, marker TTL.
_WRITE = """
local version = tonumber(redis.call('HGET', KEYS[1], '_version') or '0')
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[4])) then
  return {'noop', version}
end
if ARGV[1] == 'delete' then
  if version == 0 then return {'not_found', 0} end
  redis.call('DEL', KEYS[1])
  return {'deleted', version + 1}
end
redis.call('HSET', KEYS[1], '_source', ARGV[2], '_version', version + 1, '_invocation_id', ARGV[3])
if version == 0 then return {'created', 1} end
return {'updated', version + 1}
"""

_clients = {}  # one connection pool per URL for the life of this warm worker


def _client(url):
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url, socket_timeout=10)
    return _clients[url]


def index_document(
    doc_id=None,
    document=None,
    op="index",
    index=None,
    redis_url="redis://127.0.0.1:6380/0",
    key_prefix="es_indexer",
    row=None,
    operation=None,
    table=None,
    id_column="id",
    context=None,
):
    if row is not None:  # a row change's parameters, bound by name
        document = row if document is None else document
        doc_id = row.get(id_column) if doc_id is None else doc_id
        op = "delete" if operation == "DELETE" else op
    if doc_id is None:
        raise ValueError(f"no doc_id (and no row with an {id_column!r} column)")
    doc_id, index = str(doc_id), index or table or "documents"
    if op not in ("index", "delete"):
        raise ValueError(f"unknown op {op!r} (index | delete)")
    if op == "index" and document is None:
        raise ValueError("op=index needs a document")
    iid = context["invocation_id"]
    keys = [f"{key_prefix}:{index}:{doc_id}", f"{key_prefix}:_applied:{iid}"]
    outcome, version = _client(redis_url).eval(_WRITE, 2, *keys, op, json.dumps(document), iid, APPLIED_TTL_SECONDS)
    return {"_index": index, "_id": doc_id, "result": outcome.decode(), "_version": int(version)}
