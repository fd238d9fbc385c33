"""Several relaycast nodes sharing streams through a Redis registry (``--cluster``).

``registry`` (Redis keys, heartbeats), ``pull`` (an edge's WHEP client feeding a local Stream),
``node`` (the glue: origins, pulls, redirects), ``auth`` (the cluster secret) and ``http``
(``GET /api/cluster``, node-authenticated WHEP). redis-py is imported only by a running
registry, so a single node needs nothing of this.
"""
