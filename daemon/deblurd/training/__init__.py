"""deblurd.training"""
