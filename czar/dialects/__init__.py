"""sqlglot dialects: ADQL 2.1 and Qserv's MySQL dialect."""
