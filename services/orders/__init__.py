"""orders: work orders from alarms to closure — opened from alarms, every change an event on
``lifeline.orders``, the current state and history kept in PostgreSQL (decision 0021)."""
