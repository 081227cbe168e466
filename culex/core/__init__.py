"""The broker itself: sessions, routing, retained messages, wills, timers. No sockets, no asyncio.

Time is always passed in (`now`, monotonic seconds) so tests drive it with a fake clock, and
output goes to a `Sink` (anything with `writelines` and `close`, such as an asyncio transport).
"""
