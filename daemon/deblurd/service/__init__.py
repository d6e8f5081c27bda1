"""deblurd.service"""
