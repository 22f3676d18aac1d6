using System.Diagnostics;
using System.Security.Cryptography;

namespace OdaKvmBackup.Core.Tests.Support;

/// <summary>What the clone tests look at, read with the system's own tools (stat, filefrag), never through the code under test.</summary>
internal static class CloneChecks
{
    public const int MiB = 1 << 20;

    /// <summary>A 64 MiB base: 40 MiB of data, a hole, 1 MiB of data, a hole to the end; mode 0644, so that a
    /// clone that kept the base's mode would show.</summary>
    public static string Base(string folder, string name = "disk")
    {
        var path = Path.Combine(folder, name);
        Files.Image(path, 64L * MiB, [(0, 40 * MiB), (48L * MiB, MiB)]);
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        return path;
    }

    public static string Sha256(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(stream));
    }

    /// <summary>mtime and ctime to the nanosecond: the base of a clone must show neither a write nor a change.</summary>
    public static string Times(string path) => Tool("stat", "-c", "%y|%z", path);

    /// <summary>The file system's type as stat -f names it (xfs, ext2/ext3 for ext4, tmpfs).</summary>
    public static string FileSystemType(string path) => Tool("stat", "-f", "-c", "%T", path);

    /// <summary>Extents of a file (filefrag -v) and how many of them are shared with another file.</summary>
    public static (int Extents, int Shared) Extents(string path)
    {
        var lines = Tool("filefrag", "-v", path).Split('\n')
            .Where(line => System.Text.RegularExpressions.Regex.IsMatch(line, @"^\s*\d+:")).ToList();
        return (lines.Count, lines.Count(line => line.Contains("shared", StringComparison.Ordinal)));
    }

    public static string Tool(string program, params string[] arguments)
    {
        var start = new ProcessStartInfo(program, arguments) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        using var process = Process.Start(start)!;
        var error = process.StandardError.ReadToEndAsync();
        var output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"{program} {string.Join(' ', arguments)} failed ({process.ExitCode}): {error.Result}");
        return output.Trim();
    }

    /// <summary>Writes random bytes into a file at an offset and fsyncs it.</summary>
    public static void WriteInto(string path, long offset, int length)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Write);
        var bytes = new byte[length];
        RandomNumberGenerator.Fill(bytes);
        RandomAccess.Write(handle, bytes, offset);
        RandomAccess.FlushToDisk(handle);
    }
}
