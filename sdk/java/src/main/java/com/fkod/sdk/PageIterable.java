package com.fkod.sdk;

import java.util.Iterator;
import java.util.NoSuchElementException;
import java.util.function.Function;

/**
 * Every item of a list, fetched a page at a time as the iteration reaches it. Each call of
 * {@link #iterator()} starts again from the first page. An {@link ApiException} or
 * {@link ConnectionException} from a page fetch is thrown by {@code hasNext}.
 */
public final class PageIterable<T> implements Iterable<T> {
    private final ListParams params;
    private final Function<ListParams, Page<T>> fetch;

    PageIterable(ListParams params, Function<ListParams, Page<T>> fetch) {
        this.params = params;
        this.fetch = fetch;
    }

    @Override
    public Iterator<T> iterator() {
        return new Iterator<>() {
            private Page<T> page;
            private int index;

            @Override
            public boolean hasNext() {
                while (page == null || index >= page.data().size()) {
                    if (page != null && (!page.hasMore() || page.nextCursor() == null)) {
                        return false;
                    }
                    ListParams next = page == null ? params : params.withCursor(page.nextCursor());
                    page = fetch.apply(next);
                    index = 0;
                }
                return true;
            }

            @Override
            public T next() {
                if (!hasNext()) {
                    throw new NoSuchElementException();
                }
                return page.data().get(index++);
            }
        };
    }
}
