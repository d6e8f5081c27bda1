"""deblurd.inference"""
