"""deblurd.gpu"""
