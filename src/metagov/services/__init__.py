"""Business logic, apart from HTTP: the API and the job runners both call these functions.

Services take an open session and never commit; the caller owns the unit of work.
"""
