"""deblurd.pipeline"""
