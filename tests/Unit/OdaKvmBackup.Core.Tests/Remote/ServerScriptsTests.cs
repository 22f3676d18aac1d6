using System.Globalization;
using System.Security.Cryptography;
using OdaKvmBackup.Core.Tests.Support;
using static OdaKvmBackup.Core.Tests.Support.CloneChecks;

namespace OdaKvmBackup.Core.Tests.Remote;

/// <summary>The scripts the store runs on an SSH server, run there through the real sshd on loopback (the server is
/// this machine, so the tests look at its files directly): segment digests by each tool, clones on XFS and copies
/// on ext4.</summary>
[Collection(SshServerCollection.Name)]
public sealed class ServerScriptsTests : IClassFixture<XfsFixture>
{
    private const long Segment = 16L * MiB;
    private readonly TestSshServer _server;
    private readonly XfsFileSystem _xfs;

    public ServerScriptsTests(SshServerFixture fixture, XfsFixture xfs)
    {
        _server = fixture.Server;
        _xfs = xfs.FileSystem;
    }

    // ------------------------------------------------------------------ segment digests

    /// <summary>The tools, forced one by one, and the one the script picks ("auto"). python2.7 is Oracle Linux 7's
    /// Python, python3.6 Oracle Linux 8's platform-python.</summary>
    public static TheoryData<string> Tools() => new() { "auto", "python3", "python2.7", "python3.6", "openssl", "sha256sum" };

    [Theory]
    [MemberData(nameof(Tools))]
    public async Task Every_asked_segment_s_digest_is_the_sha256_of_its_bytes_whatever_the_tool(string tool)
    {
        var folder = _server.DataFolder("digests-" + tool.Replace('.', '_'));
        // Data and holes; a segment that is a hole; one of written zeros with a byte of data at its end; a short last segment.
        var size = 4 * Segment + 300 * 1024 + 5;
        var content = new byte[size];
        RandomNumberGenerator.Fill(content.AsSpan(100, 3 * MiB));
        RandomNumberGenerator.Fill(content.AsSpan((int)(4 * Segment), 300 * 1024 + 5));
        content[3 * Segment - 1] = 7;
        var file = Path.Combine(folder, "disk 'quoted' $(x)");
        await using (var stream = new FileStream(file, FileMode.CreateNew))
        {
            stream.SetLength(size);
            foreach (var (offset, length) in new[] { (100L, 3 * MiB), (2 * Segment, (int)Segment), (4 * Segment, 300 * 1024 + 5) })
            {
                stream.Position = offset;
                stream.Write(content, (int)offset, length);
            }
        }
        long[] indexes = [4, 0, 3, 1, 2, 9];

        var result = await RunAsync(DigestScript(tool), [file, "1048576", "16", .. indexes.Select(i => i.ToString(CultureInfo.InvariantCulture))]);

        Assert.True(result.ExitCode == 0, $"exit code {result.ExitCode}: {result.StandardError}");
        var digests = SshBackupStore.ParseSegmentDigests(result.StandardOutput, indexes, file, out var usedTool);
        Assert.Equal(tool == "auto" ? "python3" : tool, usedTool);
        var expected = indexes.Select(i => Convert.ToHexString(SHA256.HashData(content.AsSpan(
            (int)Math.Min(i * Segment, size), (int)Math.Clamp(size - i * Segment, 0, Segment)))).ToLowerInvariant());
        Assert.Equal(expected, digests);
        // One digest scheme: the server's digests are the digest list's segment digests.
        using var builder = new BlockDigestListBuilder(size);
        builder.Append(0, content);
        var list = builder.Complete();
        Assert.All(indexes.Where(i => i < list.SegmentCount), i => Assert.True(list.SegmentMatches(i, digests[Array.IndexOf(indexes, i)])));
        Assert.Equal(Convert.ToHexString(BlockDigestList.ZeroSegmentDigest).ToLowerInvariant(), digests[Array.IndexOf(indexes, 1L)]);
    }

    [Theory]
    [MemberData(nameof(Tools))]
    public async Task A_file_that_is_not_there_ends_the_script_with_its_own_exit_code(string tool)
    {
        var missing = Path.Combine(_server.DataFolder("digests-missing"), "nothing here");

        var result = await RunAsync(DigestScript(tool), [missing, "1048576", "16", "0"]);

        Assert.Equal(ServerScripts.FileMissing, result.ExitCode);
        Assert.Equal(SshBackupStore.SegmentScriptFileMissing, result.ExitCode);
        Assert.Contains("nothing here", result.StandardError, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("python3")]
    [InlineData("python2.7")]
    [InlineData("openssl")]
    public async Task An_index_that_is_not_a_number_fails_the_script_rather_than_giving_fewer_digests(string tool)
    {
        var folder = _server.DataFolder("digests-garbled-" + tool.Replace('.', '_'));
        var file = Path.Combine(folder, "disk");
        File.WriteAllBytes(file, new byte[MiB]);

        var result = await RunAsync(DigestScript(tool), [file, "65536", "1", "0", "x"]);

        Assert.NotEqual(0, result.ExitCode);
        Assert.NotEqual(ServerScripts.FileMissing, result.ExitCode);
    }

    /// <summary>Which tool the script picks, seen through a python3 on the PATH that logs how it is called: one
    /// with OpenSSL's hashlib runs the digests; one without (a Python built without OpenSSL hashes slower than
    /// openssl) is passed over, and openssl gives the same digests.</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task The_script_runs_a_python_whose_hashlib_is_openssl_s_and_passes_over_one_that_is_not(bool withOpenSsl)
    {
        var folder = _server.DataFolder("digests-pick-" + withOpenSsl);
        var bin = Directory.CreateDirectory(Path.Combine(folder, "bin")).FullName;
        var log = Path.Combine(folder, "python3.log");
        var python = Path.Combine(bin, "python3");
        File.WriteAllText(python, $$"""
            #!/bin/sh
            printf '%s\n' "$2" | head -n 2 | tr '\n' ' ' >> '{{log}}'; echo >> '{{log}}'
            {{(withOpenSsl ? "" : "case $2 in *_hashlib*) exit 1 ;; esac")}}
            exec /usr/bin/python3 "$@"
            """);
        File.SetUnixFileMode(python, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var file = Path.Combine(folder, "disk");
        var content = new byte[Segment + 5];
        RandomNumberGenerator.Fill(content);
        File.WriteAllBytes(file, content);

        var result = await RunAsync($"PATH={bin}:$PATH\n" + ServerScripts.SegmentDigests, [file, "1048576", "16", "1", "0"]);

        Assert.True(result.ExitCode == 0, $"exit code {result.ExitCode}: {result.StandardError}");
        Assert.Equal(
            [Convert.ToHexString(SHA256.HashData(content.AsSpan((int)Segment))).ToLowerInvariant(), Convert.ToHexString(SHA256.HashData(content.AsSpan(0, (int)Segment))).ToLowerInvariant()],
            SshBackupStore.ParseSegmentDigests(result.StandardOutput, [1, 0], file, out var used));
        Assert.Equal(withOpenSsl ? "python3" : "openssl", used);
        var calls = File.ReadAllLines(log);
        Assert.Contains("_hashlib", calls[0], StringComparison.Ordinal);
        if (withOpenSsl)
            Assert.True(calls.Length == 2 && calls[1].Contains("import errno, hashlib", StringComparison.Ordinal), string.Join("\n", calls));
        else
            Assert.True(calls.Length == 1, "the Python without OpenSSL was run: " + string.Join("\n", calls));
    }

    // ------------------------------------------------------------------ check of zeros

    /// <summary>The tools of the check of zeros, forced one by one ("cmp": no Python), and the one it picks.</summary>
    public static TheoryData<string> ZeroCheckTools() => new() { "auto", "python3", "python2.7", "python3.6", "cmp" };

    /// <summary>On an XFS server folder, as the lab's: a few bytes in a hole, written zeros, a range that ends inside
    /// data. With a Python, the holes are not read: what the script's processes read (rchar of /proc/PID/io) stays
    /// far below the file's 1 GiB.</summary>
    [Theory]
    [MemberData(nameof(ZeroCheckTools))]
    public async Task The_check_of_zeros_finds_the_first_non_zero_byte_and_reads_no_hole_with_a_python(string tool)
    {
        var file = Path.Combine(_xfs.Folder("zero-check-" + tool.Replace('.', '_')), "disk 'quoted' $(x)");
        await using (var stream = new FileStream(file, FileMode.CreateNew))
        {
            stream.SetLength(1024 * MiB);
            stream.Position = 3 * Segment + 5000;
            stream.Write([0x00, 0x05, 0x06]);
            stream.Position = 40 * Segment;
            var zerosThenData = new byte[2 * MiB];
            zerosThenData[MiB + 10] = 0x99;
            stream.Write(zerosThenData);
        }
        (long, long)[] ranges = [(0, 3 * Segment), (3 * Segment, Segment), (4 * Segment, 36 * Segment), (40 * Segment, MiB + 10), (40 * Segment + 4, 24 * Segment)];
        var script = (tool == "auto" ? "" : "ODAKVM_DIGEST_TOOL=" + SshClient.QuoteForShell(tool is "python2.7" or "python3.6" ? Interpreter(tool) : tool) + "\n")
            + SshBackupStore.ZeroCheckScript + "\necho \"read $(sed -n 's/^rchar: //p' /proc/$$/io)\" >&2\n";

        var result = await RunAsync(script, [file, .. ranges.SelectMany(r => new[] { r.Item1.ToString(CultureInfo.InvariantCulture), r.Item2.ToString(CultureInfo.InvariantCulture) })]);

        Assert.True(result.ExitCode == 0, $"exit code {result.ExitCode}: {result.StandardError}");
        Assert.Equal([3 * Segment + 5001, 40 * Segment + MiB + 10], SshBackupStore.ParseNonZero(result.StandardOutput, ranges, file));
        var read = long.Parse(result.StandardError.Split('\n').Last(line => line.StartsWith("read ", StringComparison.Ordinal))["read ".Length..], CultureInfo.InvariantCulture);
        if (tool == "cmp")
            Assert.True(read > 1024 * MiB, $"cmp read {read} bytes: it reads the holes (this test would see a Python that does)");
        else
            Assert.True(read < 64 * MiB, $"the check read {read} bytes of a file of 1 GiB that holds 2 MiB");
    }

    // ------------------------------------------------------------------ clones

    [Fact]
    public async Task On_an_xfs_server_folder_the_new_file_is_a_reflink_clone_private_to_its_owner()
    {
        var folder = _xfs.Folder("server-clone");
        var baseFile = Base(folder);
        var baseHash = Sha256(baseFile);
        var baseTimes = Times(baseFile);
        var usedBefore = _xfs.UsedBytes();
        var clone = Path.Combine(folder, "disk.partial");

        var result = await RunAsync(ServerScripts.CloneFile, [baseFile, clone]);

        Assert.True(result.ExitCode == 0, $"exit code {result.ExitCode}: {result.StandardError}");
        Assert.Equal(FileClone.Reflink, result.StandardOutput.Split('\n')[0]);
        Assert.Equal(baseHash, Sha256(clone));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(clone));
        var (extents, shared) = Extents(clone);
        Assert.True(extents > 0 && shared == extents, $"{shared} of the clone's {extents} extents are shared with the base");
        var grown = _xfs.UsedBytes() - usedBefore;
        Assert.True(grown < MiB, $"the server's used space grew by {grown} bytes for a clone of 41 MiB of data");
        WriteInto(clone, 0, MiB);
        Assert.Equal(baseHash, Sha256(baseFile));
        Assert.Equal(baseTimes, Times(baseFile));
    }

    [Fact]
    public async Task On_an_ext4_server_folder_the_new_file_is_a_sparse_local_copy_private_to_its_owner()
    {
        var folder = _server.DataFolder("server-copy");
        Assert.Equal("ext2/ext3", FileSystemType(folder));
        var baseFile = Base(folder);
        var baseHash = Sha256(baseFile);
        var baseTimes = Times(baseFile);
        var clone = Path.Combine(folder, "disk.partial");

        var result = await RunAsync(ServerScripts.CloneFile, [baseFile, clone]);

        Assert.True(result.ExitCode == 0, $"exit code {result.ExitCode}: {result.StandardError}");
        Assert.Equal(FileClone.LocalCopy, result.StandardOutput.Split('\n')[0]);
        Assert.Equal(baseHash, Sha256(clone));
        Assert.True(Files.AllocatedBytes(clone) <= Files.AllocatedBytes(baseFile),
            $"the copy allocates {Files.AllocatedBytes(clone)} bytes, the base {Files.AllocatedBytes(baseFile)}: its holes were filled");
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(clone));
        Assert.Equal(baseHash, Sha256(baseFile));
        Assert.Equal(baseTimes, Times(baseFile));
    }

    [Theory]
    [InlineData("a file")]
    [InlineData("a link to a file")]
    [InlineData("a dangling link")]
    public async Task The_server_clones_over_nothing_that_is_already_there(string what)
    {
        var folder = _xfs.Folder("server-exists-" + what.Replace(' ', '-'));
        var baseFile = Base(folder);
        var clone = Path.Combine(folder, "disk.partial");
        var elsewhere = Path.Combine(folder, "elsewhere");
        if (what == "a file")
            File.WriteAllText(clone, "kept");
        else
            File.CreateSymbolicLink(clone, elsewhere);
        if (what == "a link to a file")
            File.WriteAllText(elsewhere, "kept");

        var result = await RunAsync(ServerScripts.CloneFile, [baseFile, clone]);

        Assert.Equal(ServerScripts.TargetExists, result.ExitCode);
        Assert.Contains("already exists", result.StandardError, StringComparison.Ordinal);
        if (what == "a dangling link")
            Assert.False(File.Exists(elsewhere), "the clone was written through the link");
        else
            Assert.Equal("kept", File.ReadAllText(what == "a file" ? clone : elsewhere));
    }

    [Theory]
    [InlineData("missing")]
    [InlineData("a link")]
    [InlineData("a folder")]
    public async Task The_server_refuses_a_base_that_is_not_a_regular_file_and_makes_no_new_file(string what)
    {
        var folder = _xfs.Folder("server-bad-base-" + what.Replace(' ', '-'));
        var real = Base(folder, "real");
        var baseFile = Path.Combine(folder, "base");
        if (what == "a link")
            File.CreateSymbolicLink(baseFile, real);
        else if (what == "a folder")
            Directory.CreateDirectory(baseFile);
        var clone = Path.Combine(folder, "disk.partial");

        var result = await RunAsync(ServerScripts.CloneFile, [baseFile, clone]);

        Assert.Equal(ServerScripts.FileMissing, result.ExitCode);
        Assert.False(File.Exists(clone) || Directory.Exists(clone));
    }

    // ------------------------------------------------------------------ helpers

    private static string DigestScript(string tool) => tool switch
    {
        "auto" => ServerScripts.SegmentDigests,
        "python2.7" or "python3.6" => ServerScripts.SegmentDigestsWith(Interpreter(tool)),
        _ => ServerScripts.SegmentDigestsWith(tool),
    };

    /// <summary>An interpreter of the Python of an older Oracle Linux: on the PATH, or one pyenv installed.</summary>
    private static string Interpreter(string name)
    {
        var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        var candidates = new[] { "/usr/bin", "/usr/local/bin" }.Select(folder => Path.Combine(folder, name))
            .Concat(Directory.Exists(Path.Combine(home, ".pyenv/versions"))
                ? Directory.GetDirectories(Path.Combine(home, ".pyenv/versions")).Order().Select(folder => Path.Combine(folder, "bin", name))
                : []);
        return candidates.FirstOrDefault(File.Exists)
            ?? throw new InvalidOperationException($"This test runs the script with {name}, the Python of an older Oracle Linux: install it (pyenv install {(name == "python2.7" ? "2.7.18" : "3.6.15")}).");
    }

    private Task<ProcessResult> RunAsync(string script, IReadOnlyList<string> arguments)
    {
        var runner = new CliWrapProcessRunner(NullSink.Instance);
        var ssh = new SshClient(new SshDestination(null, "good", "/"), runner, runner, _server.Options with { ConfigFile = _server.ClientConfig });
        return ssh.RunScriptAsync(script, arguments, CancellationToken.None);
    }
}
