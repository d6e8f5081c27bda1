"""deblurd.sim"""
