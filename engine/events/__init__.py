"""Push events: the outbox (`outbox.emit`, written in the caller's transaction so an event exists
exactly when the change it reports was committed) and their delivery to the account's webhook
(`delivery`: the deliverer with its leases per account, batches and retries; `sender`: one signed
request and what its answer means; `webhooks`: the API's service, one event and its redelivery).

May use: `engine.store`, and the directory's address and secret checks. Every domain room records
its events through `outbox.emit`; nothing here calls back into them.
"""
