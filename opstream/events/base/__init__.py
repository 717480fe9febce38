"""What both event stores stand on, written once: the write queue and its group commit
(``store``), the writes the queue carries (``writes``), the mapping of driver errors to
opstream's (``errors``), the decoding of rows (``rows``) and the appends a store makes on
its own account: claims, recoveries, expiries (``system_appends``).

Nothing here speaks SQL or knows a driver: each backend brings those.
"""
