"""Tenancy: Drivers (the governance engines that use the gateway, with their API keys and event
endpoints) and the communities each owns. Only a community's Driver can see it or anything in it.
"""
