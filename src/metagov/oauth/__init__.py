"""Installing plugins and logging users in through a platform's OAuth: the authorize and callback
legs, the signed single-use ``state`` that carries the flow between them, and the install itself.
"""
