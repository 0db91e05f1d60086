package com.fkod.sdk;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;

/**
 * Runs every {@link Test} method of the SDK's test classes, prints one line per test and a
 * summary, and exits with status 1 when a test failed. Arguments, when given, select the
 * test classes by simple name.
 */
public final class TestRunner {
    private static final List<Class<?>> TEST_CLASSES = List.of(
            JsonTest.class, VersionTest.class, WebhookTest.class, LiveApiTest.class, OAuthTest.class);

    private TestRunner() {
    }

    public static void main(String[] args) {
        int passed = 0;
        int failed = 0;
        int skipped = 0;
        List<String> selected = Arrays.asList(args);

        for (Class<?> testClass : TEST_CLASSES) {
            if (!selected.isEmpty() && !selected.contains(testClass.getSimpleName())) {
                continue;
            }
            List<Method> methods = new ArrayList<>();
            for (Method method : testClass.getDeclaredMethods()) {
                if (method.isAnnotationPresent(Test.class)) {
                    methods.add(method);
                }
            }
            methods.sort(Comparator.comparing(Method::getName));

            for (Method method : methods) {
                String name = testClass.getSimpleName() + "." + method.getName();
                long started = System.nanoTime();
                Throwable failure = run(testClass, method);
                long millis = (System.nanoTime() - started) / 1_000_000;
                if (failure == null) {
                    passed++;
                    System.out.printf("PASS %s (%d ms)%n", name, millis);
                } else if (failure instanceof Check.Skipped) {
                    skipped++;
                    System.out.printf("SKIP %s: %s%n", name, failure.getMessage());
                } else {
                    failed++;
                    System.out.printf("FAIL %s (%d ms)%n", name, millis);
                    failure.printStackTrace(System.out);
                }
            }
        }

        System.out.printf("%d passed, %d failed, %d skipped%n", passed, failed, skipped);
        System.exit(failed == 0 ? 0 : 1);
    }

    private static Throwable run(Class<?> testClass, Method method) {
        try {
            Object instance = testClass.getDeclaredConstructor().newInstance();
            method.invoke(instance);
            return null;
        } catch (InvocationTargetException e) {
            return e.getCause();
        } catch (ReflectiveOperationException e) {
            return e;
        }
    }
}
