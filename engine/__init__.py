"""switchdesk engine: storage, services and (later) the FreeSWITCH side of the process."""
