"""Identity: one person across platforms. A MetagovID stands for a person in one community (so it
belongs to that community's Driver); platform accounts are linked to it by the Driver, or by the
person logging in through a plugin's OAuth. Ids can be merged; a merged id keeps resolving to the
id it was merged into.
"""
