package fkod

import (
	"context"
	"net/url"
	"strconv"
)

// Page is one page of a cursor-paginated list.
type Page[T any] struct {
	Data    []T  `json:"data"`
	HasMore bool `json:"has_more"`
	// NextCursor is the cursor of the next page; it is empty on the last page.
	NextCursor string `json:"next_cursor"`
}

// ListParams selects a page: Limit is 1 to 100 (the platform's default is 20 when zero) and
// Cursor is a NextCursor from the previous page.
type ListParams struct {
	Limit  int
	Cursor string
}

func (p ListParams) query() url.Values {
	query := url.Values{}
	if p.Limit > 0 {
		query.Set("limit", strconv.Itoa(p.Limit))
	}
	if p.Cursor != "" {
		query.Set("cursor", p.Cursor)
	}
	return query
}

// Iter walks every item of a list, fetching the next page when the current one is used up:
//
//	it := client.Users.Iter(ctx, fkod.UserListParams{})
//	for it.Next() {
//		user := it.Current()
//	}
//	if err := it.Err(); err != nil { ... }
type Iter[T any] struct {
	ctx      context.Context
	fetch    func(ctx context.Context, cursor string) (*Page[T], error)
	items    []T
	index    int
	cursor   string
	started  bool
	finished bool
	current  T
	err      error
}

func newIter[T any](ctx context.Context, cursor string,
	fetch func(ctx context.Context, cursor string) (*Page[T], error)) *Iter[T] {
	return &Iter[T]{ctx: ctx, fetch: fetch, cursor: cursor}
}

// Next moves to the next item and reports whether there is one. It returns false at the end
// of the list and after an error, which Err then returns.
func (it *Iter[T]) Next() bool {
	for it.index >= len(it.items) {
		if it.err != nil || (it.started && it.finished) {
			return false
		}
		page, err := it.fetch(it.ctx, it.cursor)
		if err != nil {
			it.err = err
			return false
		}
		it.started = true
		it.items = page.Data
		it.index = 0
		it.cursor = page.NextCursor
		it.finished = !page.HasMore || page.NextCursor == ""
	}
	it.current = it.items[it.index]
	it.index++
	return true
}

// Current returns the item that the last successful Next moved to.
func (it *Iter[T]) Current() T { return it.current }

// Err returns the error that stopped the iteration, or nil.
func (it *Iter[T]) Err() error { return it.err }
