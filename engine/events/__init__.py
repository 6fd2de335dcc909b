"""Push events: the outbox (`outbox.emit`, written in the caller's transaction so an event exists
exactly when the change it reports was committed) and their delivery to the account's webhook
(`webhooks`: leases per account, signing, retries, the redeliver API's service).

May use: `engine.store`, and the directory's address and secret checks. Every domain room records
its events through `outbox.emit`; nothing here calls back into them.
"""
