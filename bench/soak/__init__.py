"""The soak: the whole local stack under a steady mixed load for minutes, one row of
figures per interval, then a verdict on growth, statuses and data (`./dev soak`).

Modules, one noun each: `stack` (the processes, started as the tests start them),
`load` (the clients and what each may be answered), `probes` (RSS, file descriptors,
server connections, cache entries), `verdict` (the rules, pure), `report` (the table).
"""
