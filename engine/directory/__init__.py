"""The directory: accounts and their settings, users and their rights, secrets (passwords, API keys,
webhook-secret encryption), login geography, SIP devices, extensions and DIDs — everything that
says who may do what and which number or phone belongs to whom.

May use: `engine.store`. Reaches the call center only through its public functions (a user's queue
membership through `callcenter.queues`, a deleted device's agent through `callcenter.agents`).
"""
