"""The local embedded stack: Mosquitto, Tansu and influxd as child processes.

The same code serves ``lifeline stack up|status|down``, ``lifeline run`` and the test
fixtures, so what the tests start is what an engineer starts.
"""
