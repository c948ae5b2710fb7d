"""The gateway's faces: each speaks one client protocol, checks its own credential and
answers in its own error format, and calls only the core (pools, credential check and
throttle, transactions, cache, deadlines, metrics, log) below it."""
