"""The bot's pure logic: the FAQ matcher and the flow engine (flow files, engine): state + message in, actions out.
May import: scrm.domain, the leaf scrm.spreadsheet (KB files), yaml, numpy, jieba; never scrm.db, services or web.
"""
