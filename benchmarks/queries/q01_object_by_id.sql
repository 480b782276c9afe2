-- id: Q01
-- category: object by id
-- lang: adql
-- question: What did the pipeline measure for this one object (all columns)?
SELECT * FROM dp02.Object WHERE objectId = {oid}
