"""Phone lists and their leads: validation, bulk import (staged and invisible until complete),
streamed listing, the do-not-call lookup, and CSV import/export for the command line (`cli`).

May use: `engine.store`. Nothing here talks to FreeSWITCH; the dialer will read leads through this
room's public functions.
"""
