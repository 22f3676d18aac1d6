using System.Text.RegularExpressions;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests.Remote;

/// <summary>
/// The SFTP connections of an SSH store's writers, against a real sshd on loopback: each new one is a TCP and SSH
/// handshake and a login (0.3-0.5 s on the lab), paid on the VM's time on its overlay for every copy and every digest
/// list. Counted by the logins the server logged.
/// </summary>
[Collection(SshServerCollection.Name)]
public sealed class SshConnectionReuseTests(SshServerFixture fixture)
{
    private readonly TestSshServer _server = fixture.Server;

    private int Logins => Regex.Matches(_server.Log, "Accepted publickey").Count;

    [Fact]
    public async Task Files_written_one_after_another_share_one_login_and_no_connection_outlives_the_store()
    {
        var root = _server.DataFolder("reuse-" + Guid.NewGuid().ToString("N"));
        var store = _server.Store("good", root);
        var before = Logins;

        foreach (var name in new[] { "copy.partial", "copy.digests.partial", "other.partial" })
        {
            await using var writer = await store.CreateFileAsync(name, CancellationToken.None);
            await writer.WriteAsync(0, new byte[] { 1, 2, 3 }, CancellationToken.None);
            await writer.CompleteAsync(3, CancellationToken.None);
        }
        // A writer that never completed (its copy failed) gives its connection up.
        var broken = await store.CreateFileAsync("failed.partial", CancellationToken.None);
        await broken.WriteAsync(0, new byte[] { 9 }, CancellationToken.None);
        await broken.DisposeAsync();

        Assert.Equal(1, Logins - before); // three completed files, then the failed one, on the first connection
        Assert.All(new[] { "copy.partial", "copy.digests.partial", "other.partial" }, name =>
            Assert.Equal(new byte[] { 1, 2, 3 }, File.ReadAllBytes(Path.Combine(root, name))));
        await using (var again = await store.CreateFileAsync("after-failure.partial", CancellationToken.None))
            await again.CompleteAsync(0, CancellationToken.None);
        Assert.Equal(2, Logins - before); // the failed writer's connection was closed, not kept

        await store.DisposeAsync();
        Assert.Equal(0, _server.KillConnections()); // the spare connection went with the store
    }
}
