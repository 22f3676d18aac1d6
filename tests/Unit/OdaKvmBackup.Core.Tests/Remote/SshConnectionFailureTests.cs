using System.Security.Cryptography;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests.Remote;

/// <summary>What the store does when ssh refuses or loses the connection, against a real sshd on loopback.</summary>
[Collection(SshServerCollection.Name)]
public sealed class SshConnectionFailureTests
{
    private const int MiB = 1 << 20;
    private readonly TestSshServer _server;

    public SshConnectionFailureTests(SshServerFixture fixture) => _server = fixture.Server;

    [Theory]
    [InlineData("unknown", "known_hosts.empty", ErrorIds.SshHostKeyUnknown)] // its config says StrictHostKeyChecking no
    [InlineData("changed", "known_hosts.changed", ErrorIds.SshHostKeyChanged)]
    public async Task A_host_key_that_is_not_the_known_one_is_refused_and_known_hosts_stays_as_it_was(string alias, string knownHosts, string errorId)
    {
        var before = File.ReadAllBytes(_server.Path(knownHosts));
        await using var store = _server.Store(alias, _server.DataFolder(alias));

        var error = await Assert.ThrowsAnyAsync<BackupException>(() => store.CheckWritableAsync(CancellationToken.None));

        Assert.Equal(errorId, error.ErrorId);
        Assert.Equal(BackupErrorCategory.SecurityError, error.Category);
        Assert.Contains(alias, error.Message, StringComparison.Ordinal);
        Assert.Contains("never", error.FullMessage, StringComparison.Ordinal);
        Assert.Equal(before, File.ReadAllBytes(_server.Path(knownHosts)));
    }

    [Fact]
    public async Task An_unknown_host_key_names_the_way_to_check_and_add_it()
    {
        await using var store = _server.Store("unknown", _server.DataFolder("unknown-fix"));

        var error = await Assert.ThrowsAnyAsync<BackupException>(() => store.GetFreeBytesAsync(CancellationToken.None));

        Assert.Contains($"ssh-keyscan -p {_server.Port} 127.0.0.1", error.RecommendedAction, StringComparison.Ordinal);
        Assert.Contains("ssh-keygen -lf", error.RecommendedAction, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_key_the_server_does_not_accept_is_SshAuthenticationFailed()
    {
        await using var store = _server.Store("wrongkey", _server.DataFolder("wrongkey"));

        var error = await Assert.ThrowsAnyAsync<BackupException>(() => store.CheckWritableAsync(CancellationToken.None));

        Assert.Equal(ErrorIds.SshAuthenticationFailed, error.ErrorId);
        Assert.Contains("ssh-copy-id", error.RecommendedAction, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_port_nobody_listens_on_is_SshHostUnreachable_at_once()
    {
        await using var store = _server.Store("down", "/backup");

        var error = await Assert.ThrowsAnyAsync<BackupException>(() => store.CheckWritableAsync(CancellationToken.None));

        Assert.Equal(ErrorIds.SshHostUnreachable, error.ErrorId);
        Assert.Contains("Connection refused", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_connection_cut_in_the_middle_of_a_file_is_made_again_and_the_file_is_byte_identical()
    {
        using var server = new TestSshServer();
        var root = server.DataFolder("resume");
        var content = new byte[48 * MiB];
        RandomNumberGenerator.Fill(content);
        await using var store = server.Store("good", root);

        await using (var writer = await store.CreateFileAsync("disk", CancellationToken.None))
        {
            var cuts = 0;
            for (var offset = 0; offset < content.Length; offset += MiB)
            {
                await writer.WriteAsync(offset, content.AsMemory(offset, MiB), CancellationToken.None);
                // Writes are in flight (the window holds up to 16 MiB): the server has not acknowledged them all.
                if (offset is 12 * MiB or 30 * MiB)
                    cuts += server.KillConnections();
            }
            await writer.CompleteAsync(content.Length, CancellationToken.None);
            Assert.True(cuts >= 2, $"{cuts} connections were cut");
        }

        Assert.Equal(SHA256.HashData(content), SHA256.HashData(File.ReadAllBytes(Path.Combine(root, "disk"))));
        Assert.True(CountLogins(server) >= 3, server.Log);
    }

    [Fact]
    public async Task A_link_gone_dead_is_noticed_by_the_keep_alives_and_the_file_is_finished_on_a_new_connection()
    {
        using var server = new TestSshServer();
        var root = server.DataFolder("dead-link");
        var content = new byte[8 * MiB];
        RandomNumberGenerator.Fill(content);
        await using var store = server.Store("good", root);

        await using (var writer = await store.CreateFileAsync("disk", CancellationToken.None))
        {
            await writer.WriteAsync(0, content.AsMemory(0, 4 * MiB), CancellationToken.None);
            var frozen = server.FreezeConnections();
            Assert.NotEmpty(frozen);
            await writer.WriteAsync(4 * MiB, content.AsMemory(4 * MiB), CancellationToken.None);
            await writer.CompleteAsync(content.Length, CancellationToken.None);
            server.KillConnections();
        }

        Assert.Equal(content, File.ReadAllBytes(Path.Combine(root, "disk")));
    }

    [Fact]
    public async Task A_server_that_stays_down_fails_the_write_with_SshConnectionLost_naming_the_host()
    {
        using var server = new TestSshServer();
        await using var store = server.Store("good", server.DataFolder("down"));
        await using var writer = await store.CreateFileAsync("disk", CancellationToken.None);
        await writer.WriteAsync(0, new byte[MiB], CancellationToken.None);

        server.Stop();
        var error = await Assert.ThrowsAnyAsync<BackupException>(async () =>
        {
            for (var offset = MiB; offset < 64 * MiB; offset += MiB)
                await writer.WriteAsync(offset, new byte[MiB], CancellationToken.None);
            await writer.CompleteAsync(64 * MiB, CancellationToken.None);
        });

        Assert.Equal(ErrorIds.SshConnectionLost, error.ErrorId);
        Assert.Contains("'good'", error.Message, StringComparison.Ordinal);
        Assert.Contains("5 attempts", error.Message, StringComparison.Ordinal);
    }

    private static int CountLogins(TestSshServer server) =>
        server.Log.Split('\n').Count(line => line.Contains("Accepted publickey", StringComparison.Ordinal));
}
