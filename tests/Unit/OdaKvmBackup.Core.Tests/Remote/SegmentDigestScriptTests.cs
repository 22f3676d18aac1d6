using System.Globalization;
using System.Security.Cryptography;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests.Remote;

/// <summary>The store's remote scripts run here with the local sh (dash), as the server's sh would run them.</summary>
public sealed class SegmentDigestScriptTests : IDisposable
{
    private readonly TempFolder _temp = new("segment-digest-script");

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task Each_segment_s_digest_equals_sha256sum_of_its_bytes_holes_and_short_last_segment_included()
    {
        var file = _temp.Combine("disk with 'quotes' and $(x)");
        var content = new byte[5 * 65536 + 100];
        RandomNumberGenerator.Fill(content.AsSpan(0, 65536));
        RandomNumberGenerator.Fill(content.AsSpan(4 * 65536));
        await File.WriteAllBytesAsync(file, content);

        var output = await RunAsync([file, "65536", "1", "5", "0", "1", "4", "3", "2"]);

        Assert.True(output.ExitCode == 0, output.StandardError);
        var digests = SshBackupStore.ParseSegmentDigests(output.StandardOutput, [5, 0, 1, 4, 3, 2], file, out var tool);
        Assert.Equal("python3", tool); // this machine's python3 hashes with OpenSSL
        var expected = new[] { 5, 0, 1, 4, 3, 2 }.Select(i => Convert.ToHexStringLower(SHA256.HashData(content.AsSpan(i * 65536, Math.Min(65536, content.Length - i * 65536)))));
        Assert.Equal(expected, digests);
    }

    [Fact]
    public async Task A_file_that_is_not_there_ends_the_script_with_its_own_exit_code()
    {
        var output = await RunAsync([_temp.Combine("missing"), "4096", "1", "0"]);

        Assert.Equal(SshBackupStore.SegmentScriptFileMissing, output.ExitCode);
        Assert.Contains("missing", output.StandardError, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_or_garbled_lines_are_an_error_not_a_short_list()
    {
        var digest = new string('a', 64);

        Assert.Equal([digest], SshBackupStore.ParseSegmentDigests($"tool python3\n7 {digest}\n", [7], "f"));
        var error = Assert.Throws<BackupException>(() => SshBackupStore.ParseSegmentDigests($"tool python3\n7 {digest}\n8 nothex\n", [7, 8], "f"));
        Assert.Equal(ErrorIds.UnparsableOutput, error.ErrorId);
        Assert.Contains("8 nothex", error.Message, StringComparison.Ordinal);
    }

    /// <summary>The server's answer is untrusted: only exactly what the script prints is taken, the tool named
    /// first, one line per asked segment, nothing more (a login banner, a segment not asked, a digest twice).</summary>
    [Theory]
    [InlineData("", "no 'tool' line")]
    [InlineData("7 {a}\n8 {b}\n", "no 'tool' line")]
    [InlineData("Welcome!\ntool python3\n7 {a}\n8 {b}\n", "no 'tool' line")]
    [InlineData("tool /bin/sh -c rm\n7 {a}\n8 {b}\n", "no 'tool' line")]
    [InlineData("tool python3\n7 {a}\n", "1 lines of digests for 2 segments")]
    [InlineData("tool python3\n7 {a}\n8 {b}\n9 {b}\n", "3 lines of digests for 2 segments")]
    [InlineData("tool python3\n7 {a}\n7 {a}\n", "the line '7 ")]
    [InlineData("tool python3\n7 {a}\n9 {b}\n", "the line '9 ")]
    [InlineData("tool python3\n7 {a}\n8 {B}\n", "the line '8 ")]
    [InlineData("tool python3\n7 {a}\n8  {b}\n", "the line '8 ")]
    [InlineData("tool python3\n7 {a}\n-8 {b}\n", "the line '-8 ")]
    [InlineData("tool openssl\n7 {a}\r\n8 {b}\n", "the line '7 ")]
    public void An_answer_that_is_not_exactly_the_asked_digests_is_refused(string output, string why)
    {
        var text = output.Replace("{a}", new string('a', 64), StringComparison.Ordinal).Replace("{b}", new string('b', 64), StringComparison.Ordinal)
            .Replace("{B}", new string('B', 64), StringComparison.Ordinal);

        var error = Assert.Throws<BackupException>(() => SshBackupStore.ParseSegmentDigests(text, [7, 8], "server:/backup/vm/run/disk"));

        Assert.Equal(ErrorIds.UnparsableOutput, error.ErrorId);
        Assert.Contains(why, error.Message, StringComparison.Ordinal);
        Assert.Contains("server:/backup/vm/run/disk", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void An_answer_longer_than_the_asked_digests_can_be_is_refused_unread_and_shown_cut()
    {
        var flood = "tool python3\n7 " + new string('a', 64) + "\n" + new string('x', 10 << 20);

        var error = Assert.Throws<BackupException>(() => SshBackupStore.ParseSegmentDigests(flood, [7], "f"));

        Assert.Equal(ErrorIds.UnparsableOutput, error.ErrorId);
        Assert.Contains("more than 1 digests take", error.Message, StringComparison.Ordinal);
        Assert.True(error.Message.Length < 2000, $"the message holds {error.Message.Length} characters");
    }

    [Theory]
    [InlineData("tool python3\n8 {b}\n7 {a}\n", "python3")]
    [InlineData("tool /usr/libexec/platform-python\n7 {a}\n8 {b}", "platform-python")]
    [InlineData("tool /root/.pyenv/versions/2.7.18/bin/python2.7\n7 {a}\n8 {b}\n", "python2.7")]
    [InlineData("tool openssl\n7 {a}\n8 {b}\n", "openssl")]
    [InlineData("tool sha256sum\n7 {a}\n8 {b}\n", "sha256sum")]
    public void The_digests_come_in_the_order_asked_with_the_tool_the_server_ran(string output, string expectedTool)
    {
        var text = output.Replace("{a}", new string('a', 64), StringComparison.Ordinal).Replace("{b}", new string('b', 64), StringComparison.Ordinal);

        var digests = SshBackupStore.ParseSegmentDigests(text, [7, 8], "f", out var tool);

        Assert.Equal([new string('a', 64), new string('b', 64)], digests);
        Assert.Equal(expectedTool, tool);
    }

    [Theory]
    [InlineData("reflink\n67108864 0\n", "reflink", 67108864, 0)]
    [InlineData("local copy\n67108864 83968\n", "local copy", 67108864, 83968L * 512)]
    [InlineData("local copy\n4096 16\n", "local copy", 4096, 4096)] // allocated past the size (preallocation): at most the size
    public void The_server_s_answer_to_a_clone_says_how_it_was_made(string output, string storedAs, long size, long copied) =>
        Assert.Equal(new CloneResult(storedAs, size, copied), SshBackupStore.ParseClone(output, "f"));

    [Theory]
    [InlineData("")]
    [InlineData("reflink\n")]
    [InlineData("copied\n4096 8\n")]
    [InlineData("Welcome!\nreflink\n4096 0\n")]
    [InlineData("reflink\n4096\n")]
    [InlineData("reflink\n-4096 0\n")]
    [InlineData("reflink\n4096 0\nmore\n")]
    [InlineData("local copy\n4096 99999999999999999\n")]
    public void A_clone_answer_that_is_not_exactly_the_script_s_is_refused(string output) =>
        Assert.Equal(ErrorIds.UnparsableOutput, Assert.Throws<BackupException>(() => SshBackupStore.ParseClone(output, "f")).ErrorId);

    [Theory]
    [InlineData(16L << 20, 1L << 20)]
    [InlineData(1L << 20, 1L << 20)]
    [InlineData(65536, 65536)]
    [InlineData(3000, 8)]
    [InlineData(4097, 1)]
    public void Dd_reads_whole_segments_with_the_largest_block_that_divides_them(long segmentSize, long blockSize)
    {
        Assert.Equal(blockSize, SshBackupStore.DdBlockSize(segmentSize));
    }

    [Fact]
    public async Task The_check_of_zeros_names_the_first_non_zero_byte_of_each_range_that_holds_one()
    {
        var file = _temp.Combine("copy with 'quotes' and $(x)");
        await using (var stream = File.Create(file))
        {
            stream.SetLength(10 * 65536);
            stream.Position = 3 * 65536 + 777;
            stream.WriteByte(0x42);
            stream.Position = 9 * 65536 + 1;
            stream.WriteByte(0x01);
        }

        var output = await RunAsync(SshBackupStore.ZeroCheckScript, [file, "0", "131072", "131072", "327680", "589824", "65536"]);

        Assert.Equal(0, output.ExitCode);
        Assert.Equal([3L * 65536 + 777, 9L * 65536 + 1],
            SshBackupStore.ParseNonZero(output.StandardOutput, [(0, 131072), (131072, 327680), (589824, 65536)], file));
    }

    [Fact]
    public async Task Without_GNU_cmp_the_check_of_zeros_still_finds_the_range_that_holds_data()
    {
        var file = _temp.Combine("copy");
        await using (var stream = File.Create(file))
        {
            stream.SetLength(4 * 65536);
            stream.Position = 2 * 65536 + 5;
            stream.WriteByte(0x42);
        }
        // No Python, and a cmp that knows no options, as busybox's: the script reads with dd and tr instead.
        var bin = _temp.Folder("bin");
        File.WriteAllText(Path.Combine(bin, "cmp"), "#!/bin/sh\nexit 2\n");
        File.SetUnixFileMode(Path.Combine(bin, "cmp"), UnixFileMode.UserRead | UnixFileMode.UserExecute);
        var script = $"PATH='{bin}':$PATH\n" + ZeroCheckWith("cmp");

        var output = await RunAsync(script, [file, "0", "131072", "131072", "131072"]);

        Assert.Equal(0, output.ExitCode);
        Assert.Equal([131072L], SshBackupStore.ParseNonZero(output.StandardOutput, [(0, 131072), (131072, 131072)], file));
    }

    /// <summary>The tools the check of zeros runs with: a Python (holes skipped with SEEK_DATA), or, where there is
    /// none (forced here by naming a tool that is no Python), GNU cmp against /dev/zero.</summary>
    public static TheoryData<string> ZeroCheckTools => new() { "python3", Python27, "cmp" };

    private const string Python27 = "/root/.pyenv/versions/2.7.18/bin/python2.7";
    private const long MiB = 1 << 20;

    [Theory]
    [MemberData(nameof(ZeroCheckTools))]
    public async Task A_few_bytes_in_the_middle_of_a_hole_are_found_at_their_exact_offset(string tool)
    {
        var file = _temp.Combine("copy");
        await using (var stream = File.Create(file))
        {
            stream.SetLength(64 * MiB);
            stream.Position = 16 * MiB * 3 + 5000;
            stream.Write([0x00, 0x07, 0x42]);
        }
        (long, long)[] ranges = [(0, 16 * MiB), (16 * MiB, 32 * MiB), (48 * MiB, 16 * MiB)];

        var output = await RunZeroCheckAsync(tool, file, ranges);

        Assert.True(output.ExitCode == 0, output.StandardError);
        Assert.Equal([16 * MiB * 3 + 5001], SshBackupStore.ParseNonZero(output.StandardOutput, ranges, file));
    }

    [Theory]
    [MemberData(nameof(ZeroCheckTools))]
    public async Task Zeros_written_as_data_are_zeros_and_a_range_is_read_up_to_its_end_only(string tool)
    {
        // Data from 1 MiB to 3 MiB: zeros written (allocated, not a hole) up to 2 MiB + 10, then one byte that is not.
        var file = _temp.Combine("copy");
        await using (var stream = File.Create(file))
        {
            stream.SetLength(8 * MiB);
            stream.Position = 1 * MiB;
            var data = new byte[2 * MiB];
            data[MiB + 10] = 0x99;
            stream.Write(data);
        }
        Assert.True(await AllocatedAsync(file) >= 2 * MiB, "the zeros were written as data");
        (long, long)[] ranges = [(0, 2 * MiB), (2 * MiB + 11, 5 * MiB), (2 * MiB, 11), (2 * MiB + 4, 4 * MiB)];

        var output = await RunZeroCheckAsync(tool, file, ranges);

        Assert.True(output.ExitCode == 0, output.StandardError);
        Assert.Equal([2 * MiB + 10, 2 * MiB + 10], SshBackupStore.ParseNonZero(output.StandardOutput, ranges, file));
    }

    [Theory]
    [MemberData(nameof(ZeroCheckTools))]
    public async Task A_range_past_the_end_of_the_file_is_not_taken_for_zeros(string tool)
    {
        var file = _temp.Combine("copy");
        await using (var stream = File.Create(file))
            stream.SetLength(4 * MiB);
        (long, long)[] ranges = [(0, 4 * MiB), (4 * MiB - 4096, 8192)];

        var output = await RunZeroCheckAsync(tool, file, ranges);

        Assert.True(output.ExitCode == 0, output.StandardError);
        Assert.Single(SshBackupStore.ParseNonZero(output.StandardOutput, ranges, file));
    }

    /// <summary>What the check costs the server is its data: a hole of 1 GiB is not read (the bytes the script's
    /// processes read, from /proc/PID/io, stay far below it), and the byte in it is still found.</summary>
    [Theory]
    [InlineData("python3")]
    [InlineData(Python27)]
    public async Task With_a_Python_the_check_of_zeros_reads_no_hole(string tool)
    {
        var file = _temp.Combine("copy");
        await using (var stream = File.Create(file))
        {
            stream.SetLength(1024 * MiB);
            stream.Position = 700 * MiB + 12345;
            stream.WriteByte(0x01);
        }
        (long, long)[] ranges = [(0, 512 * MiB), (512 * MiB, 512 * MiB)];

        var (output, bytesRead) = await RunCountingReadsAsync(ZeroCheckWith(tool), [file, .. Arguments(ranges)]);

        Assert.True(output.ExitCode == 0, output.StandardError);
        Assert.Equal([700 * MiB + 12345], SshBackupStore.ParseNonZero(output.StandardOutput, ranges, file));
        Assert.True(bytesRead < 64 * MiB, $"the check read {bytesRead} bytes of a file of 1 GiB that holds 4 KiB");
    }

    /// <summary>A file system that cannot tell holes from data (forced by ODAKVM_READ_HOLES): every byte is read,
    /// and the answer is the same.</summary>
    [Theory]
    [InlineData("python3")]
    [InlineData(Python27)]
    public async Task Where_holes_cannot_be_told_from_data_the_check_of_zeros_reads_everything(string tool)
    {
        var file = _temp.Combine("copy");
        await using (var stream = File.Create(file))
        {
            stream.SetLength(256 * MiB);
            stream.Position = 200 * MiB + 3;
            stream.WriteByte(0x01);
        }
        (long, long)[] ranges = [(0, 128 * MiB), (128 * MiB, 128 * MiB)];

        var (output, bytesRead) = await RunCountingReadsAsync("export ODAKVM_READ_HOLES=1\n" + ZeroCheckWith(tool), [file, .. Arguments(ranges)]);

        Assert.True(output.ExitCode == 0, output.StandardError);
        Assert.Equal([200 * MiB + 3], SshBackupStore.ParseNonZero(output.StandardOutput, ranges, file));
        Assert.True(bytesRead >= 200 * MiB, $"the check read {bytesRead} bytes: it should have read up to the byte at 200 MiB");
    }

    [Fact]
    public void A_check_of_zeros_that_did_not_finish_or_names_a_range_not_asked_is_an_error()
    {
        Assert.Empty(SshBackupStore.ParseNonZero("done\n", [(0, 10)], "f"));
        Assert.Equal(ErrorIds.UnparsableOutput, Assert.Throws<BackupException>(() => SshBackupStore.ParseNonZero("", [(0, 10)], "f")).ErrorId);
        Assert.Equal(ErrorIds.UnparsableOutput, Assert.Throws<BackupException>(() => SshBackupStore.ParseNonZero("5 5\ndone\n", [(0, 10)], "f")).ErrorId);
        Assert.Equal(ErrorIds.UnparsableOutput, Assert.Throws<BackupException>(() => SshBackupStore.ParseNonZero("0 12\ndone\n", [(0, 10)], "f")).ErrorId);
        Assert.Equal(ErrorIds.UnparsableOutput, Assert.Throws<BackupException>(() => SshBackupStore.ParseNonZero("Welcome!\n0 3\ndone\n", [(0, 10)], "f")).ErrorId);
    }

    private static string ZeroCheckWith(string tool) => "ODAKVM_DIGEST_TOOL=" + SshClient.QuoteForShell(tool) + "\n" + SshBackupStore.ZeroCheckScript;

    private static IEnumerable<string> Arguments((long Offset, long Length)[] ranges) =>
        ranges.SelectMany(r => new[] { r.Offset.ToString(CultureInfo.InvariantCulture), r.Length.ToString(CultureInfo.InvariantCulture) });

    private static Task<ProcessResult> RunZeroCheckAsync(string tool, string file, (long Offset, long Length)[] ranges)
    {
        if (tool.StartsWith('/'))
            Assert.True(File.Exists(tool), $"{tool} is not on this machine");
        return RunAsync(ZeroCheckWith(tool), [file, .. Arguments(ranges)]);
    }

    /// <summary>Runs a script under an sh that then prints, on its standard error, the bytes its children read
    /// (rchar of /proc/PID/io counts the reaped children's reads, theirs included).</summary>
    private async Task<(ProcessResult Output, long BytesRead)> RunCountingReadsAsync(string script, string[] arguments)
    {
        var scriptFile = _temp.Combine("script.sh");
        await File.WriteAllTextAsync(scriptFile, script);
        var result = await RunAsync("script=$1; shift; sh \"$script\" \"$@\"; rc=$?; echo \"read $(sed -n 's/^rchar: //p' /proc/$$/io)\" >&2; exit $rc",
            [scriptFile, .. arguments]);
        var line = result.StandardError.Split('\n').Last(l => l.StartsWith("read ", StringComparison.Ordinal));
        return (result with { StandardError = result.StandardError.Replace(line, "", StringComparison.Ordinal) },
            long.Parse(line["read ".Length..], CultureInfo.InvariantCulture));
    }

    private static async Task<long> AllocatedAsync(string file) =>
        long.Parse((await new CliWrapProcessRunner(NullSink.Instance).RunAsync("stat", ["-c", "%b", file])).StandardOutput.Trim(), CultureInfo.InvariantCulture) * 512;

    private static Task<ProcessResult> RunAsync(string script, string[] arguments) =>
        new CliWrapProcessRunner(NullSink.Instance).RunAsync("sh", ["-c", script, "sh", .. arguments]);

    private static Task<ProcessResult> RunAsync(string[] arguments) =>
        new CliWrapProcessRunner(NullSink.Instance).RunAsync("sh", ["-c", ServerScripts.SegmentDigests, "sh", .. arguments]);
}
