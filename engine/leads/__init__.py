"""Phone lists and their leads: the list service with single-lead edits and the do-not-call lookup
(`phonelists`), lead validation and fast decoding (`validation`), bulk import (`imports`: staged and
invisible until complete), streamed listing (`streaming`), the CSV form (`csvformat`), and CSV
import/export for the command line (`cli`).

May use: `engine.store`. Nothing here talks to FreeSWITCH; the dialer will read leads through this
room's public functions.
"""
