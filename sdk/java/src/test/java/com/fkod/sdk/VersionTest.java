package com.fkod.sdk;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

public class VersionTest {
    @Test
    public void versionMatchesVersionFile() throws IOException {
        Path file = Path.of(System.getProperty("fkod.sdk.dir", "."), "VERSION");
        Check.equal(Files.readString(file).strip(), Version.SDK, "Version.SDK against " + file);
    }

    @Test
    public void userAgentNamesSdkAndVersion() {
        FkodClient client = FkodClient.builder().baseUrl("http://127.0.0.1:9").apiKey("sk_test_x")
                .userAgent("acme-lms/2.0").build();
        Check.isTrue(client.userAgent().startsWith("fkod-java/" + Version.SDK + " "),
                "User-Agent " + client.userAgent());
        Check.isTrue(client.userAgent().endsWith(" acme-lms/2.0"), "User-Agent " + client.userAgent());
    }

    @Test
    public void clientWithoutBaseUrlIsRejected() {
        if (System.getenv("FKOD_BASE_URL") != null) {
            Check.raises(IllegalArgumentException.class,
                    () -> FkodClient.builder().baseUrl("ftp://example").apiKey("k").build());
            return;
        }
        Check.raises(IllegalArgumentException.class, () -> FkodClient.builder().apiKey("k").build());
    }
}
