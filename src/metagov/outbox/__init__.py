"""The outbox: events for Drivers, recorded with the change that caused them, and their
deliveries to the Driver's event URL and to process callback URLs (signed, retried, in order).

``service`` records and reads events and manages deliveries; ``handlers`` holds the ``deliver``
job, the only code that POSTs to Drivers; ``repository`` holds every statement.
"""
