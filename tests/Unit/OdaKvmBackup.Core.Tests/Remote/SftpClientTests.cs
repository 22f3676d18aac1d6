using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests.Remote;

/// <summary>The SFTP client itself against OpenSSH's internal-sftp on loopback.</summary>
[Collection(SshServerCollection.Name)]
public sealed class SftpClientTests
{
    private readonly TestSshServer _server;

    public SftpClientTests(SshServerFixture fixture) => _server = fixture.Server;

    private Task<SftpClient> ConnectAsync()
    {
        var runner = new CliWrapProcessRunner(NullSink.Instance);
        return SftpClient.ConnectAsync(new SshClient(new SshDestination(null, "good", ""), runner, runner, _server.Options with { ConfigFile = _server.ClientConfig }), CancellationToken.None);
    }

    [Fact]
    public async Task The_server_s_extensions_and_limits_are_read_at_connection()
    {
        await using var sftp = await ConnectAsync();

        foreach (var extension in new[] { "posix-rename@openssh.com", "statvfs@openssh.com", "fsync@openssh.com", "limits@openssh.com" })
            Assert.Contains(extension, sftp.Extensions.Keys);
        Assert.Equal(256 * 1024 - 1024, sftp.MaxWriteLength);
        Assert.True(sftp.MaxReadLength > SftpClient.DefaultChunkLength);
        Assert.Equal("/root", await sftp.RealPathAsync(".", CancellationToken.None));
    }

    [Fact]
    public async Task Create_new_refuses_an_existing_name_and_a_symbolic_link_is_described_by_lstat()
    {
        var folder = _server.DataFolder(nameof(Create_new_refuses_an_existing_name_and_a_symbolic_link_is_described_by_lstat));
        File.WriteAllText(Path.Combine(folder, "target"), "x");
        File.CreateSymbolicLink(Path.Combine(folder, "link"), Path.Combine(folder, "target"));
        await using var sftp = await ConnectAsync();

        var error = await Assert.ThrowsAsync<SftpStatusException>(() => sftp.OpenAsync(Path.Combine(folder, "link"),
            SftpOpenFlags.Write | SftpOpenFlags.Create | SftpOpenFlags.Exclusive, UnixFileMode.UserRead, CancellationToken.None));

        Assert.Equal(SftpStatusCode.Failure, error.Status);
        Assert.True((await sftp.LStatAsync(Path.Combine(folder, "link"), CancellationToken.None))!.IsSymbolicLink);
        Assert.True((await sftp.StatAsync(Path.Combine(folder, "link"), CancellationToken.None))!.IsRegularFile);
        Assert.Null(await sftp.StatAsync(Path.Combine(folder, "nothing"), CancellationToken.None));
        Assert.Equal("x", File.ReadAllText(Path.Combine(folder, "target")));
    }

    [Fact]
    public async Task Many_writes_in_flight_land_at_their_offsets_and_fstat_sees_the_size()
    {
        var path = Path.Combine(_server.DataFolder(nameof(Many_writes_in_flight_land_at_their_offsets_and_fstat_sees_the_size)), "f");
        await using var sftp = await ConnectAsync();
        var handle = await sftp.OpenAsync(path, SftpOpenFlags.Write | SftpOpenFlags.Create | SftpOpenFlags.Truncate, null, CancellationToken.None);
        var blocks = Enumerable.Range(0, 100).Select(i => Enumerable.Repeat((byte)i, 1000).ToArray()).ToList();

        // Sent in reverse order, all before any acknowledgement is awaited.
        await Task.WhenAll(blocks.Select((block, i) => (block, i)).Reverse().Select(b => sftp.WriteAsync(handle, b.i * 1000L, b.block, CancellationToken.None)));
        var attributes = await sftp.StatAsync(handle, CancellationToken.None);
        await sftp.CloseAsync(handle, CancellationToken.None);

        Assert.Equal(100_000, attributes.Size);
        Assert.Equal(blocks.SelectMany(b => b), File.ReadAllBytes(path));
    }

    [Fact]
    public async Task A_status_error_names_the_server_the_path_and_what_was_tried()
    {
        await using var sftp = await ConnectAsync();

        var error = await Assert.ThrowsAsync<SftpStatusException>(() => sftp.RemoveDirectoryAsync("/nonexistent/odakvm", CancellationToken.None));

        Assert.Equal(ErrorIds.PathNotFound, error.ErrorId);
        Assert.Equal("Cannot delete the folder 'good:/nonexistent/odakvm': no such file or folder (the server said: No such file).", error.Message);
    }

    [Fact]
    public async Task A_request_after_the_session_is_closed_fails_at_once()
    {
        var sftp = await ConnectAsync();
        await sftp.DisposeAsync();

        await Assert.ThrowsAsync<ObjectDisposedException>(() => sftp.StatAsync("/", CancellationToken.None));
    }
}
