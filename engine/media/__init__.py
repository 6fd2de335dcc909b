"""The media library: audio that the switch plays (hold music, announcements, greetings).

Owns the `Media` rows and their files: uploads are decoded and converted once (`audio`, off the
event loop) to what FreeSWITCH plays best, stored per account under the media directory that
switchdesk owns and FreeSWITCH reads (`library`). Queues refer to media by id; `library.path`
gives the absolute file FreeSWITCH is told to play. Uses `store` only.
"""
