module github.com/fkod/fkod-go

go 1.19
