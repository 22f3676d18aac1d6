using System.Diagnostics;
using System.Text.RegularExpressions;
using OdaKvmBackup.WayBack.Tests.Support;

namespace OdaKvmBackup.WayBack.Tests;

/// <summary>
/// The digest list format as about_OdaKvmBackup documents it: the commands printed there, run as they are with bash,
/// dd, sha256sum and od, give what the module wrote into a set. If the format or the help changes alone, this fails.
/// </summary>
public sealed partial class DigestListFormatTests : IDisposable
{
    private readonly TempFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Join(dir.FullName, "build.ps1")) && Directory.Exists(Path.Join(dir.FullName, "docs", "help")))
                return dir.FullName;
        }
        throw new InvalidOperationException("The repository root (build.ps1, docs/help) was not found above " + AppContext.BaseDirectory);
    }

    /// <summary>The code block of about_OdaKvmBackup that starts with "sha256sum linux_u01.digests".</summary>
    private static string[] DocumentedCommands()
    {
        var text = File.ReadAllText(Path.Join(RepositoryRoot(), "docs", "help", "about_OdaKvmBackup.md"));
        var block = CodeBlocks().Matches(text).Select(m => m.Groups[1].Value).Single(b => b.StartsWith("sha256sum linux_u01.digests", StringComparison.Ordinal));
        return block.Split('\n', StringSplitOptions.RemoveEmptyEntries);
    }

    private string Bash(string command, IDictionary<string, string> variables)
    {
        var start = new ProcessStartInfo("bash", ["-c", command]) { WorkingDirectory = _temp.Path, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var (name, value) in variables)
            start.Environment[name] = value;
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"'{command}' failed: {process.StandardError.ReadToEnd()}");
        return output.Trim();
    }

    [Fact]
    public async Task The_commands_in_the_help_reproduce_the_list_the_module_writes()
    {
        // 40 MiB and 5 bytes: two full segments and a short one, a short last block, data, holes and a zero segment.
        var copy = _temp.Combine("linux_u01");
        var size = (40L << 20) + 5;
        await using (var stream = File.Create(copy))
        {
            stream.SetLength(size);
            var data = new byte[100_000];
            Random.Shared.NextBytes(data);
            stream.Position = 3 * 65536 + 17;
            await stream.WriteAsync(data);
            stream.Position = size - 3;
            await stream.WriteAsync(new byte[] { 1, 2, 3 });
        }
        var list = await SparseCopy.DigestListAsync(copy, null, CancellationToken.None);
        await File.WriteAllBytesAsync(copy + BackupNames.DigestListSuffix, list.Bytes.ToArray());
        var commands = DocumentedCommands();
        Assert.Equal(5, commands.Length);

        Assert.Equal(list.Sha256, Bash(commands[0], new Dictionary<string, string>()).Split(' ')[0]);
        foreach (var segment in new long[] { 0, 1, 2 })
        {
            var vars = new Dictionary<string, string> { ["n"] = segment.ToString(), ["B"] = list.BlockCount.ToString() };
            var fromCopy = Bash(commands[1], vars).Split(' ')[0];
            Assert.Equal(list.SegmentDigestHex(segment), fromCopy);
            Assert.Equal(fromCopy, Bash(commands[2], vars));
        }
        Assert.Equal(Convert.ToHexString(BlockDigestList.ZeroSegmentDigest).ToLowerInvariant(), list.SegmentDigestHex(1));
        foreach (var block in new long[] { 0, 3, 4, list.BlockCount - 1 })
        {
            var vars = new Dictionary<string, string> { ["i"] = block.ToString() };
            var fromCopy = Bash(commands[3], vars).Split(' ')[0];
            Assert.Equal(Convert.ToHexString(list.BlockDigest(block)).ToLowerInvariant(), fromCopy);
            Assert.Equal(fromCopy, Bash(commands[4], vars));
        }
        // The header as the table in the help gives it.
        var header = list.Bytes.Span;
        Assert.Equal("OKVMDIG1"u8.ToArray(), header[..8].ToArray());
        Assert.Equal(65536u, BitConverter.ToUInt32(header[8..12]));
        Assert.Equal(256u, BitConverter.ToUInt32(header[12..16]));
        Assert.Equal((size, 641L, 3L), (BitConverter.ToInt64(header[16..24]), BitConverter.ToInt64(header[24..32]), BitConverter.ToInt64(header[32..40])));
        Assert.Equal(40 + 6 * 641 + 32 * 3, list.Bytes.Length);
    }

    [GeneratedRegex("```\\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex CodeBlocks();
}
