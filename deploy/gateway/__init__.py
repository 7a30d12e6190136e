"""The gateway: live recommendations for front ends, HTTP pull, event intake, a storefront page.

See ``app.py`` for the design choice (aiohttp fed by a confluent-kafka consumer, not Faust).
"""
