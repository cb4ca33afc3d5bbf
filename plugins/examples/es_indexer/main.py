"""The es_indexer example: Elasticsearch-style indexing (by document id, versioned) into Redis.

A document is the Redis hash `<key_prefix>:<index>:<doc_id>` with `_source` (the document's JSON,
stored byte for byte), `_version` (1, 2, ... per write) and `_invocation_id` (the last writer).
Kafka delivers at least once and a runner may run an invocation twice (redelivered while in flight,
a retry after a timeout whose call did finish), so each write is applied once per invocation id:
the marker `<key_prefix>:_applied:<invocation_id>` is set in the same Lua call as the write, and
another run of that invocation changes nothing and answers `noop` with the current version.

A rule that gives it no params (seed 000: `triggers: [data_processor, es_indexer]`) binds `row`,
`operation`, `table` and `event_id` by name: the row is the document, its `id_column` its id, the
table the index, a DELETE deletes it, and the change's binlog position is the document's external
version. Runs of one row's changes are not ordered (several workers, invocations spread over
partitions), so, as Elasticsearch's `version_type=external` does, a write older than the one the
document has is not applied (`stale`), and a delete leaves a tombstone with its version so an older
index cannot bring the row back. This stands in for Elasticsearch: nothing here talks to one.
"""

import json

import redis

APPLIED_TTL_SECONDS = 7 * 24 * 3600

# KEYS: document key, applied marker. ARGV: op, source JSON, invocation id, marker TTL, external version
# ('' = none; fixed-width digits, so string order is version order).
_WRITE = """
local version = tonumber(redis.call('HGET', KEYS[1], '_version') or '0')
local deleted = redis.call('HGET', KEYS[1], '_deleted') == '1'
local external = redis.call('HGET', KEYS[1], '_external')
if ARGV[5] ~= '' and external and external >= ARGV[5] then
  return {'stale', version}
end
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[4])) then
  return {'noop', version}
end
if ARGV[1] == 'delete' then
  if version == 0 or deleted then return {'not_found', version} end
  redis.call('DEL', KEYS[1])
  if ARGV[5] ~= '' then
    redis.call('HSET', KEYS[1], '_deleted', '1', '_version', version + 1, '_external', ARGV[5],
               '_invocation_id', ARGV[3])
  end
  return {'deleted', version + 1}
end
redis.call('HSET', KEYS[1], '_source', ARGV[2], '_version', version + 1, '_invocation_id', ARGV[3])
redis.call('HDEL', KEYS[1], '_deleted')
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], '_external', ARGV[5]) end
if version == 0 or deleted then return {'created', version + 1} end
return {'updated', version + 1}
"""


def external_version(event_id):
    """A cdc event id `server:binlog-file.NNNNNN:pos:row` as fixed-width digits ('' when it is not one)."""
    parts = (event_id or "").split(":")
    try:
        return f"{int(parts[1].rsplit('.', 1)[1]):010d}{int(parts[2]):015d}{int(parts[3]):08d}"
    except (IndexError, ValueError):
        return ""


_clients = {}  # one connection pool per URL for the life of this warm worker


def _client(url):
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url, socket_timeout=10)
    return _clients[url]


def bulk_index(items):
    """The entry point (plugin.json `batch`): a list of invocations, each {"params", "context"}, as
    Elasticsearch's _bulk API takes a list of actions. Every write of the batch goes to Redis in one
    pipelined round trip; the answer is one result per item, in order: the item's outcome, or the
    exception that fails that item alone (bad parameters, a Redis error for that write)."""
    results = [None] * len(items)
    writes = {}  # redis URL -> [(item index, keys, args, index name, doc id)]
    for i, item in enumerate(items):
        try:
            url, keys, args, index, doc_id = _write_of(item["context"], **item["params"])
        except (TypeError, ValueError) as e:
            results[i] = e
            continue
        writes.setdefault(url, []).append((i, keys, args, index, doc_id))
    for url, group in writes.items():
        client = _client(url)
        pipe = client.pipeline(transaction=False)
        for _, keys, args, _, _ in group:
            _script(client)(keys=keys, args=args, client=pipe)
        replies = pipe.execute(raise_on_error=False)
        for (i, _, _, index, doc_id), reply in zip(group, replies, strict=True):
            results[i] = reply if isinstance(reply, Exception) else _answer(index, doc_id, reply)
    return results


def index_document(context=None, **params):
    """One document, as bulk_index does it for each item (for a caller that has just one)."""
    url, keys, args, index, doc_id = _write_of(context, **params)
    return _answer(index, doc_id, _script(_client(url))(keys=keys, args=args))


def _write_of(
    context,
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
    event_id=None,
):
    """(redis url, keys, args, index, doc id) of the write one invocation asks for; ValueError if none."""
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
    args = [op, json.dumps(document), iid, APPLIED_TTL_SECONDS, external_version(event_id)]
    return redis_url, keys, args, index, doc_id


def _answer(index, doc_id, reply):
    outcome, version = reply
    return {"_index": index, "_id": doc_id, "result": outcome.decode(), "_version": int(version)}


_scripts = {}


def _script(client):
    """The write as a registered script (EVALSHA, loaded once), for this client's connection pool."""
    if id(client) not in _scripts:
        _scripts[id(client)] = client.register_script(_WRITE)
    return _scripts[id(client)]
