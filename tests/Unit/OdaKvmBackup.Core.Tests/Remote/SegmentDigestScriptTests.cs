using System.Security.Cryptography;
using OdaKvmBackup.Core.Processes;
using OdaKvmBackup.Core.Storage;
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

        Assert.Equal(0, output.ExitCode);
        var digests = SshBackupStore.ParseSegmentDigests(output.StandardOutput, [5, 0, 1, 4, 3, 2], file);
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

        Assert.Equal([digest], SshBackupStore.ParseSegmentDigests($"7 {digest}\n", [7], "f"));
        var error = Assert.Throws<BackupException>(() => SshBackupStore.ParseSegmentDigests($"7 {digest}\n8 nothex\n", [7, 8], "f"));
        Assert.Equal(ErrorIds.UnparsableOutput, error.ErrorId);
        Assert.Contains("8", error.Message, StringComparison.Ordinal);
    }

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

    private static Task<ProcessResult> RunAsync(string[] arguments) =>
        new CliWrapProcessRunner(NullSink.Instance).RunAsync("sh", ["-c", SshBackupStore.SegmentDigestScript, "sh", .. arguments]);
}
