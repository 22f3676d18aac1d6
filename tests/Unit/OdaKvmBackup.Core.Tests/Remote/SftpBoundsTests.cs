using System.Diagnostics;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests.Remote;

/// <summary>
/// What an SFTP server may take from a backup: never more time than the limits say, never more memory than the
/// client's own bounds. Against <see cref="FakeSftpServer"/>, which can stop answering on cue while its pipes stay
/// open, as an sftp-server blocked on a hung NFS mount does while sshd still answers keep-alives (the same case runs
/// against a real sshd in tests/Pester/StoreBounds.Tests.ps1). The limits are set the way a user sets them, in the
/// environment, so these tests run alone.
/// </summary>
[Collection(EnvironmentCollection.Name)]
public sealed class SftpBoundsTests
{
    private const string TimeoutVariable = "ODAKVMBACKUP_SFTP_TIMEOUT_SEC";
    private const string StallVariable = "ODAKVMBACKUP_SFTP_STALL_SEC";
    private const int KiB = 1024;
    private const int MiB = 1024 * 1024;

    // However the code under test behaves, no test waits longer than this.
    private static readonly TimeSpan Outer = TimeSpan.FromSeconds(40);

    private static Task<SftpClient> ConnectAsync(FakeSftpServer server) =>
        SftpClient.ConnectAsync(server.Client(), CancellationToken.None).WaitAsync(Outer);

    [Theory]
    [InlineData(1UL << 30, 1UL << 30, 256 * KiB, 256 * KiB)] // 1 GiB per request: a 64-deep window would be 64 GiB
    [InlineData(1UL << 20, 4UL << 20, 256 * KiB, 256 * KiB)]
    [InlineData(261120UL, 261120UL, 261120, 261120)]         // OpenSSH's own 255 KiB are taken as they are
    [InlineData(1024UL, 100UL, 32 * KiB, 32 * KiB)]          // every SFTP server takes 32 KiB (the draft's minimum)
    [InlineData(0UL, 0UL, 32 * KiB, 32 * KiB)]               // 0: "no limit", so the draft's minimum
    public async Task Read_and_write_lengths_a_server_announces_are_clamped_to_32_KiB_to_256_KiB(ulong read, ulong write, int expectedRead, int expectedWrite)
    {
        var server = new FakeSftpServer { Limits = (read, write) };

        await using var sftp = await ConnectAsync(server);

        Assert.Equal(expectedRead, sftp.MaxReadLength);
        Assert.Equal(expectedWrite, sftp.MaxWriteLength);
    }

    [Fact]
    public async Task A_writer_keeps_at_most_16_MiB_in_flight_in_requests_of_at_most_256_KiB_whatever_the_server_announces()
    {
        using var limits = new EnvironmentScope((StallVariable, "2"), (TimeoutVariable, "30"));
        // 1 GiB per WRITE announced; the server reads every WRITE and acknowledges none.
        var server = new FakeSftpServer { Limits = (1UL << 30, 1UL << 30), Ignores = r => r.Type == SftpPacketType.Write };
        await using var store = new SshBackupStore(server.Client(), TestSshServer.QuickReconnect);
        var writer = await store.CreateFileAsync("disk", CancellationToken.None).WaitAsync(Outer);
        var data = new byte[MiB];
        data.AsSpan().Fill(1);

        var writing = Task.Run(async () =>
        {
            for (var offset = 0L; offset < 64 * MiB; offset += MiB)
                await writer.WriteAsync(offset, data, CancellationToken.None);
        });
        var clock = Stopwatch.StartNew();
        while (Writes(server).Count < 64 && clock.Elapsed < TimeSpan.FromSeconds(5))
            await Task.Delay(20);
        await Task.Delay(300); // more would come now if the window let them
        var firstSession = Writes(server).Where(w => w.Session == 0).ToList();

        Assert.NotEmpty(firstSession);
        Assert.All(firstSession, w => Assert.InRange(w.DataLength, 1, 256 * KiB));
        Assert.InRange(firstSession.Sum(w => (long)w.DataLength), 1, 16L * MiB);
        await Assert.ThrowsAnyAsync<Exception>(() => writing.WaitAsync(Outer)); // the server never acknowledges: the copy fails, it does not hang
        await writer.DisposeAsync();
    }

    [Fact]
    public async Task A_request_the_server_never_answers_ends_the_session_as_a_lost_connection_within_the_limit()
    {
        using var limits = new EnvironmentScope((TimeoutVariable, "1"));
        var server = new FakeSftpServer { StopsAt = r => r.Type == SftpPacketType.Stat };
        await using var sftp = await ConnectAsync(server);
        var clock = Stopwatch.StartNew();

        var error = await Assert.ThrowsAnyAsync<BackupException>(() => sftp.StatAsync("/backup", CancellationToken.None).WaitAsync(Outer));

        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(0.9), TimeSpan.FromSeconds(4));
        Assert.Equal(ErrorIds.SshConnectionLost, error.ErrorId);
        Assert.Contains("'root@fake'", error.Message, StringComparison.Ordinal);
        Assert.Contains("1 s", error.Message, StringComparison.Ordinal);
        Assert.Contains(TimeoutVariable, error.RecommendedAction, StringComparison.Ordinal);
        Assert.NotNull(sftp.Failure);
        // ssh is ended, not left behind (its process is disposed on a thread of its own once the session failed).
        Assert.Equal(1, await KilledSoonAsync(server));
        // Every later request fails at once with the same error: the session is over.
        var later = await Assert.ThrowsAnyAsync<BackupException>(() => sftp.StatAsync("/", CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(2)));
        Assert.Equal(ErrorIds.SshConnectionLost, later.ErrorId);
    }

    [Fact]
    public async Task A_server_whose_SFTP_service_never_answers_INIT_fails_the_connection_within_the_limit()
    {
        using var limits = new EnvironmentScope((TimeoutVariable, "1"));
        var server = new FakeSftpServer { StoppedFromTheStart = _ => true };
        var clock = Stopwatch.StartNew();

        var error = await Assert.ThrowsAnyAsync<BackupException>(() => ConnectAsync(server));

        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(0.9), TimeSpan.FromSeconds(4));
        Assert.Equal(ErrorIds.SshConnectionLost, error.ErrorId);
        Assert.Equal(1, await KilledSoonAsync(server));
    }

    [Fact]
    public async Task A_slow_server_that_answers_one_request_after_the_other_never_trips_the_limit()
    {
        using var limits = new EnvironmentScope((TimeoutVariable, "1"));
        // Ten requests in flight; each answer takes 0.4 s, so the last comes 4 s after it was sent: the server is
        // slow but never silent for the limit.
        var server = new FakeSftpServer { ReplyDelay = _ => TimeSpan.FromSeconds(0.4) };
        await using var sftp = await ConnectAsync(server);

        var answers = await Task.WhenAll(Enumerable.Range(0, 10).Select(_ => sftp.StatAsync("/backup", CancellationToken.None))).WaitAsync(Outer);

        Assert.All(answers, a => Assert.True(a!.IsDirectory));
        Assert.Null(sftp.Failure);
    }

    [Fact]
    public async Task A_flush_to_the_server_s_disk_may_take_ten_times_the_limit()
    {
        using var limits = new EnvironmentScope((TimeoutVariable, "1"));
        var server = new FakeSftpServer { ReplyDelay = r => r.Extension == "fsync@openssh.com" ? TimeSpan.FromSeconds(2.5) : TimeSpan.Zero };
        await using var sftp = await ConnectAsync(server);
        var handle = await sftp.OpenAsync("/backup/disk", SftpOpenFlags.Write, null, CancellationToken.None).WaitAsync(Outer);

        await sftp.FsyncAsync(handle, CancellationToken.None).WaitAsync(Outer);

        Assert.Null(sftp.Failure);
    }

    [Fact]
    public async Task A_request_sent_after_a_flush_may_wait_for_it_since_the_server_answers_in_order()
    {
        using var limits = new EnvironmentScope((TimeoutVariable, "1"));
        var server = new FakeSftpServer { ReplyDelay = r => r.Extension == "fsync@openssh.com" ? TimeSpan.FromSeconds(2.5) : TimeSpan.Zero };
        await using var sftp = await ConnectAsync(server);
        var handle = await sftp.OpenAsync("/backup/backup.json", SftpOpenFlags.Write, null, CancellationToken.None).WaitAsync(Outer);

        var flush = sftp.FsyncAsync(handle, CancellationToken.None);
        var stat = sftp.StatAsync("/backup", CancellationToken.None); // answered only after the flush: 2.5 s

        await Task.WhenAll(flush, stat).WaitAsync(Outer);
        Assert.Null(sftp.Failure);
    }

    [Fact]
    public async Task A_copy_whose_writes_stop_being_acknowledged_is_a_lost_connection_made_again_then_given_up_within_the_stall_limit()
    {
        // The request limit is long: what ends this copy is its own stall watchdog.
        using var limits = new EnvironmentScope((StallVariable, "1"), (TimeoutVariable, "30"));
        var server = new FakeSftpServer { Ignores = r => r.Type == SftpPacketType.Write && (r.Session > 0 || r.Index > 8) };
        await using var store = new SshBackupStore(server.Client(), TestSshServer.QuickReconnect);
        var clock = Stopwatch.StartNew();

        var error = await Assert.ThrowsAnyAsync<BackupException>(async () =>
        {
            await using var writer = await store.CreateFileAsync("disk", CancellationToken.None);
            var data = new byte[MiB];
            data.AsSpan().Fill(7);
            for (var offset = 0L; offset < 64 * MiB; offset += MiB)
                await writer.WriteAsync(offset, data, CancellationToken.None).AsTask().WaitAsync(Outer);
            await writer.CompleteAsync(64 * MiB, CancellationToken.None).WaitAsync(Outer);
        });

        // One stall, then one per attempt to go on (5 quick attempts): 6 s of stalls and 1.5 s of waits at most.
        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(15));
        Assert.Equal(ErrorIds.SshConnectionLost, error.ErrorId);
        Assert.Contains("5 attempts", error.Message, StringComparison.Ordinal);
        Assert.Contains("acknowledged", error.Message, StringComparison.Ordinal);
        Assert.True(server.SessionCount >= 6, $"{server.SessionCount} sessions: the copy connects again after a stall");
    }

    [Fact]
    public async Task A_read_back_whose_reads_stop_being_answered_is_given_up_within_the_stall_limit()
    {
        using var limits = new EnvironmentScope((StallVariable, "1"), (TimeoutVariable, "30"));
        var server = new FakeSftpServer { FileSize = 64L * MiB, Ignores = r => r.Type == SftpPacketType.Read && (r.Session > 0 || r.Index > 20) };
        await using var store = new SshBackupStore(server.Client(), TestSshServer.QuickReconnect);
        var clock = Stopwatch.StartNew();

        var error = await Assert.ThrowsAnyAsync<BackupException>(async () =>
        {
            await using var reader = await store.OpenReadAsync("disk", CancellationToken.None);
            var buffer = new byte[MiB];
            for (var offset = 0L; offset < reader.Size;)
                offset += await reader.ReadAsync(offset, buffer, CancellationToken.None).AsTask().WaitAsync(Outer);
        });

        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(15));
        Assert.Equal(ErrorIds.SshConnectionLost, error.ErrorId);
        Assert.Contains("5 attempts", error.Message, StringComparison.Ordinal);
    }

    private static List<FakeSftpRequest> Writes(FakeSftpServer server)
    {
        lock (server.Requests)
            return server.Requests.Where(r => r.Type == SftpPacketType.Write).ToList();
    }

    /// <summary>How many sessions the client ended, once it is at least one or 5 s have passed.</summary>
    private static async Task<int> KilledSoonAsync(FakeSftpServer server)
    {
        for (var waited = 0; server.KilledCount == 0 && waited < 5000; waited += 20)
            await Task.Delay(20);
        return server.KilledCount;
    }
}
